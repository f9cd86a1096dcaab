//! Ingesting and updating customers: the CRM upsert table, the PATCH rules, lookups by UUID or
//! external id, and manual creation in the back office.

use tracing::instrument;

use super::{CommandError, KycService, SAVE_ATTEMPTS};
use crate::customer::{ContactUpdate, Customer, NewCustomer};
use crate::error::LifecycleError;
use crate::events::{Actor, DomainEvent, Person, outbox_for};
use crate::ids::{CustomerId, FirmId};
use crate::ports::{
    CustomerPage, InfrastructureError, InsertOrMatch, ListQuery, SaveError, UpsertCandidates,
};
use crate::risk::RiskAnswers;
use crate::values::{AddedVia, CustomerType, Email, ExternalId, FullName, Phone, ValidationError};

/// A customer as the CRM sends it (`POST /customers`), already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerInput {
    /// `externalId`
    pub external_id: Option<ExternalId>,
    /// `fullName`
    pub full_name: FullName,
    /// `email`
    pub email: Email,
    /// `phone`
    pub phone: Option<Phone>,
    /// `type`, when given.
    pub customer_type: Option<CustomerType>,
}

/// What the upsert table decides for an input (API contract, `POST /customers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertPlan {
    /// Update the record with this external id (or, without one, with this email).
    Update,
    /// Set the external id on the record found by email, then update it.
    Adopt,
    /// The email belongs to a record with a different external id.
    Conflict,
    /// Nothing matches: create.
    Create,
}

/// The upsert table as a pure function of what was found.
pub fn plan_upsert(
    has_external_id: bool,
    by_external_id: Option<&Customer>,
    by_email: Option<&Customer>,
) -> UpsertPlan {
    match (has_external_id, by_external_id, by_email) {
        (true, Some(_), _) => UpsertPlan::Update,
        (true, None, Some(found)) if found.external_id.is_none() => UpsertPlan::Adopt,
        (true, None, Some(_)) => UpsertPlan::Conflict,
        (false, _, Some(_)) => UpsertPlan::Update,
        (true, None, None) | (false, _, None) => UpsertPlan::Create,
    }
}

/// The result of an upsert.
#[derive(Debug, Clone)]
pub struct Upserted {
    /// The customer as stored.
    pub customer: Customer,
    /// Whether it was created (201) rather than updated (200).
    pub created: bool,
}

/// Why an upsert or manual creation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpsertError {
    /// The email belongs to a record with a different external id (409 `conflict`).
    #[error("a customer with this email already exists with a different externalId")]
    EmailTaken,
    /// The update is not allowed (identity frozen after verification, type change…) (422).
    #[error(transparent)]
    Refused(#[from] LifecycleError),
    /// The person may not create customers.
    #[error("creating customers requires the role staff or compliance_officer")]
    Forbidden,
    /// Concurrent writers kept winning; retry.
    #[error("the customer is being changed concurrently; retry")]
    Contended,
    /// Infrastructure failure.
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
}

/// A PATCH: contact fields and proposed risk answers, each optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerPatch {
    /// Contact fields.
    pub contact: ContactUpdate,
    /// Risk answers proposed by the CRM.
    pub risk: Option<RiskAnswers>,
}

/// How a caller names a customer: the UUID or the CRM's external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerRef {
    /// Text that is a UUID: the id, or else an external id that looks like one.
    Uuid(CustomerId, ExternalId),
    /// An external id.
    External(ExternalId),
}

impl CustomerRef {
    /// Detects the form of `{id}` in a path.
    ///
    /// # Errors
    /// [`ValidationError`] when the text is not a valid external id either.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let external = ExternalId::new(text)?;
        Ok(match CustomerId::parse(text) {
            Ok(id) => Self::Uuid(id, external),
            Err(_) => Self::External(external),
        })
    }
}

impl KycService {
    /// Finds a firm's customer by UUID or external id.
    ///
    /// # Errors
    /// [`InfrastructureError`] only; an unknown or foreign id is `Ok(None)`.
    pub async fn find_customer(
        &self,
        firm: FirmId,
        reference: &CustomerRef,
    ) -> Result<Option<Customer>, InfrastructureError> {
        let store = &self.ports.customers;
        match reference {
            CustomerRef::Uuid(id, external) => match store.get(firm, *id).await? {
                Some(customer) => Ok(Some(customer)),
                None => store.get_by_external_id(firm, external).await,
            },
            CustomerRef::External(external) => store.get_by_external_id(firm, external).await,
        }
    }

    /// One page of a firm's customers.
    ///
    /// # Errors
    /// [`InfrastructureError`] only.
    pub async fn list_customers(
        &self,
        firm: FirmId,
        query: &ListQuery,
    ) -> Result<CustomerPage, InfrastructureError> {
        self.ports.customers.list(firm, query).await
    }

    /// Creates or updates a customer by the upsert table. Never triggers KYC, never charges.
    /// Concurrent upserts of one external id create exactly one record: the losing insert finds
    /// the winner and updates it.
    ///
    /// # Errors
    /// [`UpsertError`].
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn upsert_customer(
        &self,
        firm: FirmId,
        actor: &Actor,
        input: CustomerInput,
    ) -> Result<Upserted, UpsertError> {
        let store = &self.ports.customers;
        for _ in 0..SAVE_ATTEMPTS {
            // A new customer is stored in the same step as the look-up that finds no match.
            let (mut created, events) =
                self.new_customer(firm, actor, &input, AddedVia::Integration);
            let outbox = outbox_for(firm, created.id, &events);
            let UpsertCandidates {
                by_external_id,
                by_email,
            } = match store
                .insert_unless_matched(&created, &events, &outbox)
                .await
            {
                Ok(InsertOrMatch::Inserted(saved)) => {
                    created.saved(saved);
                    return Ok(Upserted {
                        customer: created,
                        created: true,
                    });
                }
                Ok(InsertOrMatch::Matched(candidates)) => candidates,
                // Taken by a concurrent create since the look-up: read again and update it.
                Err(SaveError::DuplicateExternalId | SaveError::VersionConflict) => continue,
                Err(SaveError::DuplicateInbound) => return Err(UpsertError::Contended),
                Err(SaveError::Infrastructure(e)) => return Err(e.into()),
            };
            let plan = plan_upsert(
                input.external_id.is_some(),
                by_external_id.as_ref(),
                by_email.as_ref(),
            );
            // The two reads need not be one snapshot (a store may make them one after the other):
            // a concurrent create of this very external id can commit between them and show up
            // as an email match. Read again.
            let raced = plan == UpsertPlan::Conflict
                && by_email.as_ref().and_then(|c| c.external_id.as_ref())
                    == input.external_id.as_ref();
            if raced {
                continue;
            }
            let existing = by_external_id.or(by_email);
            let outcome = match (plan, existing) {
                (UpsertPlan::Conflict, _) => return Err(UpsertError::EmailTaken),
                (UpsertPlan::Create, _) | (UpsertPlan::Update | UpsertPlan::Adopt, None) => {
                    self.insert_new(firm, actor, &input, AddedVia::Integration)
                        .await
                }
                (UpsertPlan::Update | UpsertPlan::Adopt, Some(mut customer)) => {
                    let mut events = Vec::new();
                    if plan == UpsertPlan::Adopt
                        && let Some(external) = &input.external_id
                    {
                        events.extend(customer.adopt_external_id(
                            external.clone(),
                            actor,
                            self.ports.clock.now(),
                        )?);
                    }
                    if let Some(kind) = input.customer_type
                        && kind != customer.customer_type
                    {
                        return Err(UpsertError::Refused(LifecycleError::Invalid(
                            ValidationError::new(
                                "type",
                                "type cannot be changed; re-ingest with the correct type instead",
                            ),
                        )));
                    }
                    let update = ContactUpdate {
                        full_name: Some(input.full_name.clone()),
                        email: Some(input.email.clone()),
                        phone: input.phone.clone(),
                    };
                    events.extend(customer.update_contact(
                        update,
                        actor,
                        self.ports.clock.now(),
                    )?);
                    if events.is_empty() {
                        return Ok(Upserted {
                            customer,
                            created: false,
                        });
                    }
                    self.persist(&mut customer, &events)
                        .await
                        .map(|()| Upserted {
                            customer,
                            created: false,
                        })
                }
            };
            match outcome {
                Ok(done) => return Ok(done),
                Err(SaveError::VersionConflict | SaveError::DuplicateExternalId) => continue,
                Err(SaveError::DuplicateInbound) => return Err(UpsertError::Contended),
                Err(SaveError::Infrastructure(e)) => return Err(e.into()),
            }
        }
        Err(UpsertError::Contended)
    }

    /// A new customer from the input (not stored) and its creation events.
    fn new_customer(
        &self,
        firm: FirmId,
        actor: &Actor,
        input: &CustomerInput,
        added_via: AddedVia,
    ) -> (Customer, Vec<DomainEvent>) {
        Customer::create(
            self.ports.ids.customer_id(),
            firm,
            NewCustomer {
                external_id: input.external_id.clone(),
                full_name: input.full_name.clone(),
                email: input.email.clone(),
                phone: input.phone.clone(),
                customer_type: input.customer_type.unwrap_or_default(),
            },
            added_via,
            actor,
            self.ports.clock.now(),
        )
    }

    async fn insert_new(
        &self,
        firm: FirmId,
        actor: &Actor,
        input: &CustomerInput,
        added_via: AddedVia,
    ) -> Result<Upserted, SaveError> {
        let (mut customer, events) = self.new_customer(firm, actor, input, added_via);
        let outbox = outbox_for(firm, customer.id, &events);
        let saved = self
            .ports
            .customers
            .insert(&customer, &events, &outbox)
            .await?;
        customer.saved(saved);
        Ok(Upserted {
            customer,
            created: true,
        })
    }

    /// A person creates a customer by hand in the back office (`added_via = ADMIN_MANUAL`).
    ///
    /// # Errors
    /// [`UpsertError::Forbidden`] for a role that may not; [`UpsertError::Refused`] when the
    /// external id is taken; [`UpsertError::Infrastructure`].
    #[instrument(skip_all, fields(firm_id = %firm), err(level = "info"))]
    pub async fn create_customer_manually(
        &self,
        firm: FirmId,
        person: &Person,
        input: CustomerInput,
    ) -> Result<Customer, UpsertError> {
        if !person.role.is_staff_or_above() {
            return Err(UpsertError::Forbidden);
        }
        let actor = Actor::Person(person.clone());
        match self
            .insert_new(firm, &actor, &input, AddedVia::AdminManual)
            .await
        {
            Ok(done) => Ok(done.customer),
            Err(SaveError::DuplicateExternalId) => Err(UpsertError::Refused(
                LifecycleError::Invalid(ValidationError::new(
                    "externalId",
                    "another customer already has this externalId",
                )),
            )),
            Err(SaveError::VersionConflict | SaveError::DuplicateInbound) => {
                Err(UpsertError::Contended)
            }
            Err(SaveError::Infrastructure(e)) => Err(e.into()),
        }
    }

    /// Applies a PATCH: contact fields (name and email freeze once verified) and risk answers
    /// proposed for a person to confirm.
    ///
    /// # Errors
    /// [`CommandError::NotFound`], [`CommandError::Refused`] (identity frozen), and the rest of
    /// [`CommandError`].
    #[instrument(skip_all, fields(firm_id = %firm, customer_id = %id), err(level = "info"))]
    pub async fn patch_customer(
        &self,
        firm: FirmId,
        id: CustomerId,
        actor: &Actor,
        patch: CustomerPatch,
    ) -> Result<Customer, CommandError> {
        let now = self.ports.clock.now();
        self.mutate(firm, id, |customer| {
            let mut events = customer.update_contact(patch.contact.clone(), actor, now)?;
            if let Some(answers) = patch.risk {
                events.extend(customer.propose_risk(answers, actor, now));
            }
            Ok(events)
        })
        .await
    }

    /// A person confirms the risk answers (`PUT …/risk`).
    ///
    /// # Errors
    /// [`CommandError`].
    #[instrument(skip_all, fields(firm_id = %firm, customer_id = %id), err(level = "info"))]
    pub async fn confirm_risk(
        &self,
        firm: FirmId,
        id: CustomerId,
        person: &Person,
        answers: RiskAnswers,
    ) -> Result<Customer, CommandError> {
        let now = self.ports.clock.now();
        self.mutate(firm, id, |customer| {
            customer.confirm_risk(answers, person, now)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_reference_may_still_be_an_external_id() {
        let text = "550e8400-e29b-41d4-a716-446655440000";
        match CustomerRef::parse(text).unwrap() {
            CustomerRef::Uuid(id, external) => {
                assert_eq!(id.to_string(), text);
                assert_eq!(external.as_str(), text);
            }
            CustomerRef::External(_) => panic!("a UUID must be tried as an id first"),
        }
        assert!(matches!(
            CustomerRef::parse("crm-7741").unwrap(),
            CustomerRef::External(_)
        ));
    }
}
